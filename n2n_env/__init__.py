"""N2N: network-to-network compression as reinforcement learning."""
