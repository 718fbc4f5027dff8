-- Tracks whose id, artist or any caption appears in an evaluation set.
SELECT row_id,
       CASE WHEN track_id IN (SELECT track_id FROM eval_tracks)
                THEN 'track id is in evaluation set ' || (SELECT min(source) FROM eval_tracks e WHERE e.track_id = c.track_id)
            WHEN artist_norm IN (SELECT artist FROM eval_artists)
                THEN 'artist is in evaluation set ' || (SELECT min(source) FROM eval_artists e WHERE e.artist = c.artist_norm)
            ELSE 'a caption of this track appears in an evaluation set' END AS reason
FROM candidates c
WHERE track_id IN (SELECT track_id FROM eval_tracks)
   OR artist_norm IN (SELECT artist FROM eval_artists)
   OR track_id IN (SELECT DISTINCT track_id FROM candidates
                   WHERE norm_text IN (SELECT text FROM eval_texts))
