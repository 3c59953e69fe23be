"""The vocabulary every part shares: settings, catalogue, budgets, generation types, images, wire protocol."""
