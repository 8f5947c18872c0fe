-- Agents' log batches are stored exactly once: each stream remembers the agent that last wrote to it
-- and how many of its lines it stored (a batch re-sent after a lost reply is skipped).
ALTER TABLE log_streams ADD COLUMN agent_sender TEXT;
ALTER TABLE log_streams ADD COLUMN agent_next_seq BIGINT;
