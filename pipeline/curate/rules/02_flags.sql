-- The caption parser's verdicts: nothing left after cleaning, or a refusal.
SELECT row_id,
       'caption flagged ' || array_to_string(list_filter(flags, lambda f: f IN ('empty', 'refusal')), ', ')
           AS reason
FROM candidates
WHERE list_has_any(flags, ['empty', 'refusal'])
