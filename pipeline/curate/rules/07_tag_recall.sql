-- Captions that mention too few of the tags they were written from.
-- $min_tag_recall (float, 0.5): least share of its view's tags a caption must mention.
SELECT row_id,
       printf('mentions %d%% of its tags (min %d%%)', CAST(round(100 * tag_recall) AS INTEGER),
              CAST(round(100 * $min_tag_recall) AS INTEGER)) AS reason
FROM candidates
WHERE tag_recall < $min_tag_recall
