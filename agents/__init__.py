"""Reinforcement-learning agents that drive the N2N environments.

- ``agents.reinforce``: the paper's recurrent REINFORCE agent (bidirectional-LSTM removal
  policy, autoregressive-LSTM shrink policy, moving-average baseline);
- ``agents.actor_critic``: its appendix-6 variant, a critic head replacing the baseline;
- ``agents.sb3``: stable-baselines3 / sb3-contrib agents (PPO, A2C, MaskablePPO,
  RecurrentPPO) set up for a terminal-only reward;
- ``agents.random_search``: the baseline every learning agent must beat.
"""
