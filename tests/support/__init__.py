"""What the tests share: the harness (broker, agent and simulator processes), the fault proxy, fuzz settings, an independent Sparkplug decoder, test certificates."""
