-- Single-op increments: POST .../counters/{name}/increment {"delta":1}, one counter per request.
-- Key choice from BENCH_KEYS (uniform, zipf or hot); see common.lua for every setting.
local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

local requests = {}
local hot_request = nil
local next_key = nil

local function increment_request(name)
  local headers = {["Content-Type"] = "application/json"}
  return wrk.format("POST", common.counter_path(name) .. "/increment", headers, '{"delta":1}')
end

-- Requests are rendered once per counter so request() is a table lookup, not a format.
function init(args)
  common.seed()
  next_key = common.key_chooser()
  if common.key_mode == "hot" then
    hot_request = increment_request(common.hot_key)
    return
  end
  for index, name in ipairs(common.key_names()) do
    requests[index] = increment_request(name)
  end
end

function request()
  local index = next_key()
  if index == 0 then
    return hot_request
  end
  return requests[index]
end
