"""Token and request rate limits: reserve before forwarding, settle with the real usage after."""
