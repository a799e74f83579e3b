-- Named queries of the pool (coordinator/pool/), loaded by coordinator.db.postgres.

-- name: add_pool_entries
-- One statement for the whole batch (an entry already stored is left as it is): $n are parallel arrays, one element per entry; the
-- text[] columns travel as JSON text (arrays of arrays do not unnest row by row).
INSERT INTO pool_entries (
    orchestration_id, instance, seq, kind, action, topic, summary, affects, blocks, at
)
SELECT orchestration_id, instance, seq, kind, action, topic, summary,
       ARRAY(SELECT jsonb_array_elements_text(affects::jsonb)),
       ARRAY(SELECT jsonb_array_elements_text(blocks::jsonb)), at
FROM unnest(
    $1::text[], $2::text[], $3::integer[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::text[], $10::timestamptz[]
) WITH ORDINALITY AS u (
    orchestration_id, instance, seq, kind, action, topic, summary, affects, blocks, at,
    position
)
ORDER BY position
ON CONFLICT ON CONSTRAINT pool_entries_once DO NOTHING;

-- name: list_pool_entries
-- $2: only entries at or after this time (NULL: all); $3: only this instance (NULL: all).
SELECT orchestration_id, instance, seq, kind, action, topic, summary, affects, blocks, at
FROM pool_entries
WHERE orchestration_id = $1
  AND ($2::timestamptz IS NULL OR at >= $2)
  AND ($3::text IS NULL OR instance = $3)
ORDER BY at, id;
