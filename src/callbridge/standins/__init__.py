"""Protocol-faithful local stand-ins for cloud services (Bedrock, OpenAI Realtime),
for tests and offline development."""
