-- Which recording of a bucket wins: the one of the later counter state, by its version (the
-- sum of every slot's increments and decrements, which only grows as a counter changes and
-- is the same whatever node computes it), not the later wall clock: two nodes' clocks
-- differ, and a node that took the coordination over with a replica that lagged records an
-- older state after the fresher one. Rows written before this column count as version 0.
ALTER TABLE counter_history ADD COLUMN version bigint NOT NULL DEFAULT 0;
