"""Cloud speech-to-speech back ends behind the realtime interface."""
