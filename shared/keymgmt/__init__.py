"""keymgmt's HTTP API as the other services use it: the contract (request and response models,
paths, refusal codes), the one client with its retry policy, and the errors it raises."""
