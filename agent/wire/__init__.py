"""The device-cloud contract: topics, messages, commands, codec, signing and keys, and the MQTT
transport both sides speak.
"""
