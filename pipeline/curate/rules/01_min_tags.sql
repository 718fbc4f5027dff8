-- Tracks with too few tags cannot be described both partially and faithfully.
SELECT row_id,
       printf('track has %d tags (min %d); fewest in one category: %d (min %d)',
              track_n_tags, $min_tags_per_track, track_min_category_tags,
              $min_tags_per_category) AS reason
FROM candidates
WHERE track_n_tags < $min_tags_per_track OR track_min_category_tags < $min_tags_per_category
