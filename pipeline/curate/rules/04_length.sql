-- Caption length bounds, in words and in characters.
-- $min_words (int, 4): fewest words a caption may have.
-- $max_words (int, 60): most words a caption may have.
-- $min_chars (int, 15): fewest characters.
-- $max_chars (int, 400): most characters.
SELECT row_id,
       printf('caption has %d words and %d characters; allowed %d-%d words, %d-%d characters',
              n_words, n_chars, $min_words, $max_words, $min_chars, $max_chars) AS reason
FROM candidates
WHERE n_words < $min_words OR n_words > $max_words
   OR n_chars < $min_chars OR n_chars > $max_chars
