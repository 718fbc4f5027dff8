-- Views of tracks that are not (or no longer) in the catalog.
SELECT row_id, 'track ' || track_id || ' is not in the catalog' AS reason
FROM candidates
WHERE NOT track_known
