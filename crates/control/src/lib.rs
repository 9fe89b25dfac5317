//! stile-control: placeholder until its issue lands.
