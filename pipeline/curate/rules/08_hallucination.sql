-- Captions that name genres, moods or instruments the track does not have.
-- $max_hallucinated (int, 0): most descriptors the track lacks a caption may name.
SELECT row_id, 'mentions what the track lacks: ' || hallucinated_text AS reason
FROM candidates
WHERE n_hallucinated > $max_hallucinated
