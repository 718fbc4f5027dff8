-- Look-alike letters from another script inside a Latin-script caption.
SELECT row_id, 'caption ' || script_problem AS reason
FROM candidates
WHERE script_problem IS NOT NULL
