"""The cross-party exchange: PSI alignment and partial scores over the exchange.* topics.

`envelope` wraps every protocol message in an ExchangeMessage; `alignment` runs one party's
side of PSI with its state in that party's own Redis; `partial_scores` encodes score requests
and answers. `app` is the bank's exchange service; the partner's side is services/partner.
"""
