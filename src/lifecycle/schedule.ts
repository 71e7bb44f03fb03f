import { CronExpressionParser } from 'cron-parser';

/**
 * The latest time at or before now that a cron schedule fires, in the schedule's time zone.
 * Throws when cron-parser refuses the expression (ml.deploy checks it first; see ml._check_cron).
 */
export function lastFireTime(schedule: string, timezone: string, now: Date): Date {
  // prev() is strictly before its current date: a schedule firing exactly now counts.
  const expression = CronExpressionParser.parse(schedule, { currentDate: new Date(now.getTime() + 1), tz: timezone });
  return expression.prev().toDate();
}

