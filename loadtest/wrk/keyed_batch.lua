-- Keyed batches: batch.lua's requests, each under a fresh Idempotency-Key, so every batch
-- claims its key and leaves one receipt per op (the exactly-once path, measured against the
-- plain batch scenario). Keys are "<run>-<thread>-<n>": unique across threads and runs.
local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

local fragments = {}
local hot_fragment = nil
local next_key = nil
local path = "/v1/namespaces/" .. common.namespace .. "/batch"
local prefix = nil
local sent = 0

local function op_json(name)
  return '{"op":"increment","name":"' .. name .. '","delta":1}'
end

function init(args)
  common.seed()
  next_key = common.key_chooser()
  -- thread_id is set by common's setup(); the random part tells warm-up and run apart
  prefix = string.format("k%d-%d-%d-", os.time(), thread_id or 0, math.random(1, 1000000000))
  hot_fragment = op_json(common.hot_key)
  if common.key_mode ~= "hot" then
    for index, name in ipairs(common.key_names()) do
      fragments[index] = op_json(name)
    end
  end
end

function request()
  local ops = {}
  for slot = 1, common.batch_size do
    local index = next_key()
    ops[slot] = index == 0 and hot_fragment or fragments[index]
  end
  sent = sent + 1
  local headers = {["Content-Type"] = "application/json", ["Idempotency-Key"] = prefix .. sent}
  return wrk.format("POST", path, headers, '{"ops":[' .. table.concat(ops, ",") .. "]}")
end
