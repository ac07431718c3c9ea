-- wrk script wrapper (bench/writes.py): runs the script named by BENCH_SCRIPT and also
-- counts the answers by status, printed after wrk's summary as "status 401: 1234"
-- lines, which bench.load.parse_wrk reads. Each answer goes through Lua, so use it
-- where the statuses matter more than the load generator's own speed.
dofile(os.getenv("BENCH_SCRIPT"))

local threads = {}
local wrapped_setup = setup
statuses = {}

function setup(thread)
  threads[#threads + 1] = thread
  if wrapped_setup then
    wrapped_setup(thread)
  end
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  for status, count in pairs(total) do
    io.write(string.format("status %d: %d\n", status, count))
  end
end
