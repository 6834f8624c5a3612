"""Entry points that speak protocols other than OpenAI, translated to and from the OpenAI shape."""
