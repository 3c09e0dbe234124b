-- User-defined HTTP tools of an agent's LLM brain, as a JSON array of
-- {name, description, parameters, url, method, timeout_ms}.
ALTER TABLE agents ADD COLUMN tools TEXT NOT NULL DEFAULT '[]';
