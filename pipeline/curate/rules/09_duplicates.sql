-- Exact or normalised repeats among one track's views in one language: the first stays.
SELECT row_id, printf('same text as view %d', first_view) AS reason
FROM (
    SELECT row_id, view_id,
           first_value(view_id) OVER (PARTITION BY track_id, language, norm_text
                                      ORDER BY view_id) AS first_view
    FROM candidates
)
WHERE view_id <> first_view
