-- wrk script: POSTs ConfigMaps with names unique per connection thread and request.
-- Used by apiserver_bench.py: `wrk -s create_configmaps.lua URL` with BENCH_TOKEN set.
local counter = 0
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
end

local value = string.rep("v", 64)

function request()
  counter = counter + 1
  local body = string.format(
    '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm-%d-%d"},"data":{"k":"%s"}}',
    thread_id or 0, counter, value)
  return wrk.format(nil, nil, nil, body)
end

local failures = 0
function response(status, headers, body)
  if status ~= 201 then
    failures = failures + 1
    if failures <= 3 then
      io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
    end
  end
end
