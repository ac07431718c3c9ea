-- wrk script for the webhook gateway benchmark (bench/webhooks.py): each line of the
-- file named by BENCH_REQUESTS is one pre-signed delivery, tab-separated
-- "name: value" headers and then the body. Thread i of BENCH_THREADS sends lines
-- i, i+T, i+2T, ... once each, so every request carries its own delivery id and a
-- valid signature; a thread that runs out starts again (those replays answer 409 and
-- are counted as errors).
local requests = {}
local n = 0
local counter = 0

function setup(thread)
  thread:set("thread_id", counter)
  counter = counter + 1
end

function init(args)
  local threads = tonumber(os.getenv("BENCH_THREADS"))
  local mine = thread_id
  local index = 0
  for line in io.lines(os.getenv("BENCH_REQUESTS")) do
    if index % threads == mine then
      local fields = {}
      for field in string.gmatch(line, "[^\t]+") do
        fields[#fields + 1] = field
      end
      local headers = {}
      for i = 1, #fields - 1 do
        local name, value = string.match(fields[i], "^([^:]+): (.*)$")
        headers[name] = value
      end
      requests[#requests + 1] = wrk.format("POST", nil, headers, fields[#fields])
    end
    index = index + 1
  end
end

function request()
  n = n % #requests + 1
  return requests[n]
end
