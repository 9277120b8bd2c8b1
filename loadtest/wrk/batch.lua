-- Batches: POST .../batch with BENCH_BATCH_SIZE (default 100) increments of delta 1, each on a
-- counter drawn from BENCH_KEYS (uniform, zipf or hot); see common.lua for every setting.
-- With BENCH_KEYED=1 each batch goes under a fresh Idempotency-Key, so it claims its key and
-- leaves one receipt per op (the exactly-once path); keys are "k<time>-<thread>-<random>-<n>",
-- unique across threads and runs.
local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

local fragments = {}
local hot_fragment = nil
local next_key = nil
local path = "/v1/namespaces/" .. common.namespace .. "/batch"
local headers = {["Content-Type"] = "application/json"}
local key_prefix = nil
local sent = 0

local function op_json(name)
  return '{"op":"increment","name":"' .. name .. '","delta":1}'
end

-- Each op's JSON is rendered once; a request only concatenates the chosen ones.
function init(args)
  common.seed()
  next_key = common.key_chooser()
  -- thread_id is set by common's setup(); the random part tells warm-up and run apart
  key_prefix = string.format("k%d-%d-%d-", os.time(), thread_id or 0, math.random(1, 1000000000))
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
  if common.keyed then
    sent = sent + 1
    headers["Idempotency-Key"] = key_prefix .. sent
  end
  return wrk.format("POST", path, headers, '{"ops":[' .. table.concat(ops, ",") .. "]}")
end
