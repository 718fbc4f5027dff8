-- The caption reads as another language than the one its view asked for.
SELECT row_id,
       printf('asked for %s, the caption reads as %s', language, detected_language) AS reason
FROM candidates
WHERE detected_language IS NOT NULL AND detected_language <> language
