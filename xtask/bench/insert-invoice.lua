-- wrk script for `cargo xtask bench`: POST /insert-invoice with a unique invoice per request,
-- spread over 50 customers. The API key comes as the first script argument.
local key
local prefix
local counter = 0

function setup(thread)
  thread:set("thread_id", tostring(math.random(0, 0xffffff)))
end

function init(args)
  key = args[1]
  prefix = string.format("B%s%x", thread_id or "", os.time())
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"InvoiceID":"INV-%s-%d","CustomerID":"CUST-BENCH-%d","InvoiceDate":"2026-11-25","ProductList":["Laptop","Mouse"],"TotalAmount":129900}',
    prefix, counter, counter % 50)
  return wrk.format("POST", nil, { ["x-api-key"] = key, ["content-type"] = "application/json" }, body)
end
