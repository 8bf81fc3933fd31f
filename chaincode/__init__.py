"""The ehr chaincode: `core` is the contract (pure, over a key-value state);
`contract` adapts it to fabric-chaincode-python; `python -m chaincode` serves it
as chaincode-as-a-service."""
