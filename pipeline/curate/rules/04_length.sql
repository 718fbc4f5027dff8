-- Caption length bounds, in words and in characters.
SELECT row_id,
       printf('caption has %d words and %d characters; allowed %d-%d words, %d-%d characters',
              n_words, n_chars, $min_words, $max_words, $min_chars, $max_chars) AS reason
FROM candidates
WHERE n_words < $min_words OR n_words > $max_words
   OR n_chars < $min_chars OR n_chars > $max_chars
