-- wrk script for the HTTP benchmarks (bench/authz.py, bench/agents.py): POSTs the JSON bodies of
-- the file named by BENCH_BODIES (one per line), cycling through them. Requests are
-- formatted once per thread, so the load generator does no per-request work.
local requests = {}
local n = 0

function init(args)
  local path = os.getenv("BENCH_BODIES")
  for line in io.lines(path) do
    n = n + 1
    requests[n] = wrk.format("POST", nil, nil, line)
  end
  n = 0
end

function request()
  n = n % #requests + 1
  return requests[n]
end
