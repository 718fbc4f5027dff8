-- Tracks with too few tags cannot be described both partially and faithfully.
-- $min_tags_per_track (int, 2): fewest tags a track may have.
-- $min_tags_per_category (int, 0): fewest tags in each of its categories.
SELECT row_id,
       printf('track has %d tags (min %d); fewest in one category: %d (min %d)',
              track_n_tags, $min_tags_per_track, track_min_category_tags,
              $min_tags_per_category) AS reason
FROM candidates
WHERE track_n_tags < $min_tags_per_track OR track_min_category_tags < $min_tags_per_category
