-- Captions that name genres, moods or instruments the track does not have.
SELECT row_id, 'mentions what the track lacks: ' || hallucinated_text AS reason
FROM candidates
WHERE n_hallucinated > $max_hallucinated
