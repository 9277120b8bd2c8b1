-- Shared by the Counters wrk scripts: configuration, key choice, host rotation, results.
--
-- Settings come from environment variables, not script arguments, because setup() runs in
-- wrk's main Lua state, which never sees the arguments after "--":
--   BENCH_HOSTS       host:port,host:port,...  thread i connects to host i mod #hosts
--   BENCH_KEYS        uniform | zipf | hot     how each request picks its counter
--   BENCH_KEY_COUNT   distinct counters (default 10000)
--   BENCH_ZIPF_S      Zipf exponent (default 1.1)
--   BENCH_HOT_KEY     the one counter of the hot-key scenario (default "hot")
--   BENCH_NAMESPACE   namespace of every counter (default "bench")
--   BENCH_BATCH_SIZE  increments per batch request (default 100)
--   BENCH_SEED        base of the per-thread random seeds (default: the clock)
--   BENCH_STATUS      1 (default): count responses per status code; 0: skip that cost
--   BENCH_KEYED       1: batch.lua sends each batch under a fresh Idempotency-Key
-- done() prints one line "WRK_JSON {...}" that loadtest/bench.py parses.

local common = {}

local function env(name, default)
  local value = os.getenv(name)
  if value == nil or value == "" then
    return default
  end
  return value
end

common.namespace = env("BENCH_NAMESPACE", "bench")
common.key_mode = env("BENCH_KEYS", "uniform")
common.key_count = tonumber(env("BENCH_KEY_COUNT", "10000"))
common.zipf_s = tonumber(env("BENCH_ZIPF_S", "1.1"))
common.hot_key = env("BENCH_HOT_KEY", "hot")
common.batch_size = tonumber(env("BENCH_BATCH_SIZE", "100"))
common.count_status = env("BENCH_STATUS", "1") ~= "0"
common.keyed = env("BENCH_KEYED", "0") == "1"

-- Key names are built once: formatting a string per request would cost more than the
-- choice itself and would be charged to the server's latency.
function common.key_names()
  local names = {}
  for index = 1, common.key_count do
    names[index] = "k" .. (index - 1)
  end
  return names
end

local function zipf_cdf(count, exponent)
  local cdf, total = {}, 0
  for rank = 1, count do
    total = total + rank ^ -exponent
    cdf[rank] = total
  end
  for rank = 1, count do
    cdf[rank] = cdf[rank] / total
  end
  return cdf
end

local function zipf_rank(cdf)
  local u, low, high = math.random(), 1, #cdf
  while low < high do -- first rank whose cumulative weight reaches u
    local mid = math.floor((low + high) / 2)
    if cdf[mid] < u then
      low = mid + 1
    else
      high = mid
    end
  end
  return low
end

-- Returns a function giving the index (1..key_count) of the next counter; 0 means the hot key.
function common.key_chooser()
  if common.key_mode == "uniform" then
    local count = common.key_count
    return function()
      return math.random(count)
    end
  elseif common.key_mode == "zipf" then
    local cdf = zipf_cdf(common.key_count, common.zipf_s)
    return function()
      return zipf_rank(cdf)
    end
  elseif common.key_mode == "hot" then
    return function()
      return 0
    end
  end
  error("BENCH_KEYS must be uniform, zipf or hot, not " .. tostring(common.key_mode))
end

function common.counter_path(name)
  return "/v1/namespaces/" .. common.namespace .. "/counters/" .. name
end

-- Per-thread state: set by setup() in the main state, read back by done().
thread_id = 0
host_label = ""
responses = 0
status_counts = {}
first_error = ""

local function split_hosts(text)
  local hosts = {}
  for item in string.gmatch(text, "[^,]+") do
    local host, port = string.match(item, "^%s*(.-):(%d+)%s*$")
    if host == nil then
      error("BENCH_HOSTS entries must be host:port, not " .. item)
    end
    hosts[#hosts + 1] = {host = host, port = port, label = host .. ":" .. port}
  end
  return hosts
end

local threads = {}
local hosts = nil

-- wrk targets one URL; rotating thread.addr spreads the threads (and so the connections)
-- over every node, so no node is both the only coordinator and the benchmark's bottleneck.
function setup(thread)
  if hosts == nil then
    hosts = split_hosts(env("BENCH_HOSTS", wrk.host .. ":" .. (wrk.port or "80")))
  end
  local index = #threads + 1
  local target = hosts[(index - 1) % #hosts + 1]
  thread.addr = wrk.lookup(target.host, target.port)[1]
  thread:set("thread_id", index)
  thread:set("host_label", target.label)
  threads[index] = thread
end

function common.seed()
  local base = tonumber(env("BENCH_SEED", tostring(os.time())))
  math.randomseed(base + thread_id * 7919)
end

local function record(status, headers, body)
  responses = responses + 1
  status_counts[status] = (status_counts[status] or 0) + 1
  if (status < 200 or status > 299) and first_error == "" then
    first_error = status .. " " .. string.sub(body or "", 1, 300)
  end
end

-- Defining response() makes wrk hand over every header and body; BENCH_STATUS=0 avoids that.
if common.count_status then
  response = record
end

local function json_string(text)
  local escaped = string.gsub(text, '[%c"\\]', function(char)
    return string.format("\\u%04x", string.byte(char))
  end)
  return '"' .. escaped .. '"'
end

local function json_counts(counts)
  local parts = {}
  for key, count in pairs(counts) do
    parts[#parts + 1] = json_string(tostring(key)) .. ":" .. count
  end
  table.sort(parts)
  return "{" .. table.concat(parts, ",") .. "}"
end

local function gather_threads()
  local statuses, per_host, first = {}, {}, ""
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("status_counts") or {}) do
      statuses[status] = (statuses[status] or 0) + count
    end
    local label = thread:get("host_label")
    per_host[label] = (per_host[label] or 0) + (thread:get("responses") or 0)
    local sample = thread:get("first_error") or ""
    if first == "" then
      first = sample
    end
  end
  return statuses, per_host, first
end

local function non_2xx(statuses, summary)
  if not common.count_status then
    return summary.errors.status -- wrk's own count: statuses above 399 only
  end
  local count = 0
  for status, n in pairs(statuses) do
    if status < 200 or status > 299 then
      count = count + n
    end
  end
  return count
end

function done(summary, latency, requests)
  local statuses, per_host, first = gather_threads()
  local errors = summary.errors
  local ms = function(us)
    return string.format("%.3f", us / 1000)
  end
  local fields = {
    '"requests":' .. summary.requests,
    '"duration_s":' .. string.format("%.3f", summary.duration / 1e6),
    '"errors":' .. (errors.connect + errors.read + errors.write + errors.timeout),
    '"socket_errors":' .. json_counts({
      connect = errors.connect, read = errors.read, write = errors.write,
      timeout = errors.timeout,
    }),
    '"non2xx":' .. non_2xx(statuses, summary),
    '"status_counted":' .. tostring(common.count_status),
    '"status_counts":' .. json_counts(statuses),
    '"per_host":' .. json_counts(per_host),
    '"first_error":' .. json_string(first),
    '"latency_ms":{"p50":' .. ms(latency:percentile(50)) .. ',"p90":'
      .. ms(latency:percentile(90)) .. ',"p99":' .. ms(latency:percentile(99))
      .. ',"max":' .. ms(latency.max) .. ',"mean":' .. ms(latency.mean) .. "}",
  }
  io.write("WRK_JSON {" .. table.concat(fields, ",") .. "}\n")
end

return common
