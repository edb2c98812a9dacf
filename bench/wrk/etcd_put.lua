-- wrk script: raw etcd puts through etcd's v3 JSON gateway (POST /v3/kv/put), one unique key
-- per request and a 300-byte value, the anchor apiserver_bench.py compares Skiff on etcd with.
local counter = 0
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
end

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = data:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = 4
    if b == nil then chars = 2 elseif c == nil then chars = 3 end
    for j = 1, 4 do
      if j <= chars then
        local index = math.floor(n / 2 ^ (6 * (4 - j))) % 64
        out[#out + 1] = alphabet:sub(index + 1, index + 1)
      else
        out[#out + 1] = "="
      end
    end
  end
  return table.concat(out)
end

local value = base64(string.rep("v", 300))

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local key = base64(string.format("/bench/raw/%d/%d", thread_id or 0, counter))
  return wrk.format(nil, nil, nil, '{"key":"' .. key .. '","value":"' .. value .. '"}')
end
