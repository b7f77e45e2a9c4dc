//! Plans from fixtures: snapshot per case, plus the safety rules as explicit assertions.
