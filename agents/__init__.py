"""Reinforcement-learning agents that drive the N2N environments.

The paper's recurrent REINFORCE agent, its actor-critic variant and stable-baselines3
adapters arrive with the agents issue; this package is where they live.
"""
