#![no_main]

// Both Bitbucket flavours (their payloads differ, their signatures do not): the last byte picks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use baton::daemon::hooks::Provider;
    let provider = match data.last() {
        Some(b) if b & 1 == 1 => Provider::BitbucketCloud,
        _ => Provider::BitbucketServer,
    };
    baton_fuzz::webhook(provider, data)
});
