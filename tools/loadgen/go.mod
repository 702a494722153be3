// Tools module: pins hey, the HTTP load generator the webhook benchmark uses
// (Go, keep-alive, fixed rate per worker, latency percentiles).
module modelplane-affinity/tools/loadgen

go 1.26.0

tool github.com/rakyll/hey

require (
	github.com/rakyll/hey v0.1.5 // indirect
	golang.org/x/net v0.48.0 // indirect
	golang.org/x/text v0.33.0 // indirect
)
