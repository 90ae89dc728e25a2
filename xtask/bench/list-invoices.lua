-- wrk script for `cargo xtask bench`: GET /list-invoices for one of 50 customers per request.
-- The API key comes as the first script argument.
local key
local counter = 0

function init(args)
  key = args[1]
end

function request()
  counter = counter + 1
  local path = string.format("%s?customerId=CUST-BENCH-%d", wrk.path, counter % 50)
  return wrk.format("GET", path, { ["x-api-key"] = key })
end
