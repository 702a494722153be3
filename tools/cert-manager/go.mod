// Tools module: pins cert-manager so that the integration tests can install its
// CRDs (Issuer, Certificate, ...) straight from the module zip (deploy/crds/).
// No binary is built from it: no cert-manager controller runs in the tests.
module modelplane-affinity/tools/cert-manager

go 1.26.6

require github.com/cert-manager/cert-manager v1.21.2
