# Answers cron questions with fugit itself, for tests/unit/test_cron_fugit.py.
#
# Reads one JSON object per line on stdin, {"cron": "...", "start": "ISO UTC", "n": 3},
# and writes one JSON object per line: {"fires": ["...Z", ...]} with the first n
# next_time answers after start, or {"error": "..."} when fugit refuses the schedule
# (parse gives nil, raises, or next_time fails). Run with TZ=UTC, as a Director VM.
require 'json'
require 'fugit'

$stdout.sync = false
STDIN.each_line do |line|
  q = JSON.parse(line)
  answer =
    begin
      c = Fugit::Cron.parse(q['cron'])
      if c.nil?
        { 'error' => 'invalid' }
      else
        t = EtOrbi.parse(q['start'])
        fires = Array.new(q['n']) { t = c.next_time(t); t.utc.strftime('%Y-%m-%dT%H:%M:%SZ') }
        { 'fires' => fires }
      end
    rescue StandardError => e
      { 'error' => "#{e.class}: #{e.message}" }
    end
  puts JSON.generate(answer)
end
$stdout.flush
