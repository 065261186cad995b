"""The driver: Machine objects over transports, scripted and interactive scenarios."""
