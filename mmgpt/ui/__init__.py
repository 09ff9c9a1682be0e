"""The app's tabs, one module each (`image_tab`, `audio_tab`, `text_tab`), and what they share (`common`).

`app.py` assembles them into one page. Nothing here touches torch: models are the engine's.
"""
