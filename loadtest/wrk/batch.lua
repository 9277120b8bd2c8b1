-- Batches: POST .../batch with BENCH_BATCH_SIZE (default 100) increments of delta 1, each on a
-- counter drawn from BENCH_KEYS (uniform, zipf or hot); see common.lua for every setting.
local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

local fragments = {}
local hot_fragment = nil
local next_key = nil
local path = "/v1/namespaces/" .. common.namespace .. "/batch"
local headers = {["Content-Type"] = "application/json"}

local function op_json(name)
  return '{"op":"increment","name":"' .. name .. '","delta":1}'
end

-- Each op's JSON is rendered once; a request only concatenates the chosen ones.
function init(args)
  common.seed()
  next_key = common.key_chooser()
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
  return wrk.format("POST", path, headers, '{"ops":[' .. table.concat(ops, ",") .. "]}")
end
