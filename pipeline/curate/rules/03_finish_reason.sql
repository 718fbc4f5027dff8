-- Captions cut off by the token limit (finish reason "length").
SELECT row_id, 'generation ended by ' || finish_reason || ', not a natural stop' AS reason
FROM candidates
WHERE finish_reason <> 'stop'
