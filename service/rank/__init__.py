"""The rank path: payload, encoding, item cache, ranker, RankService, served lists, model registry."""
