-- POST /authenticate with a JSON body; credentials from BENCH_USERNAME / BENCH_PASSWORD (set by bench/run.py,
-- plain ASCII without quotes, so no JSON escaping is needed).
local username = os.getenv("BENCH_USERNAME")
local password = os.getenv("BENCH_PASSWORD")
if username == nil or password == nil then
  error("BENCH_USERNAME and BENCH_PASSWORD must be set")
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"username": "%s", "password": "%s"}', username, password)
