"""The demo batch: an issuer's order driven through the whole bureau on the local stack."""
