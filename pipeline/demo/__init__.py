"""A synthetic but musically real demo catalog: MIDI arrangements that follow their tags,
rendered with the General MIDI soundfont that ships inside `pretty_midi`."""
