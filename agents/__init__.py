"""Reinforcement-learning agents that drive the N2N environments.

``agents.reinforce`` is the paper's recurrent REINFORCE agent (bidirectional-LSTM removal
policy, autoregressive-LSTM shrink policy, moving-average baseline). The actor-critic
variant, stable-baselines3 adapters and the random-search baseline are still to come.
"""
