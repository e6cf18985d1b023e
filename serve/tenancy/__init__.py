"""Tenants: API keys, admission, rate limits and budgets, the usage ledger, prices, token counts and PII."""
