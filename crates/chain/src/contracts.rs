//! Contract bindings, generated at compile time from `artifacts/*.json` (ABI and bytecode as
//! produced by forge; refreshed by `tools/artifacts`).
#![allow(missing_docs, clippy::too_many_arguments)] // generated code

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    Payment,
    "artifacts/Payment.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    Registry,
    "artifacts/Registry.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    TestToken,
    "artifacts/TestToken.json"
);
